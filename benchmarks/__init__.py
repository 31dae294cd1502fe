"""Benchmarks and checks that print numbers for the README: photo stages (`photo`), clips
(`video`, on clips made by `clips`), the served API under load (`serving`) and under hostile input
(`reliability`), bare faces repainted (`bare_faces`) and the inpainter's stripes (`edge_stripes`).
They read the data folder from one setting (`data.DATA`), never from the installed package's
location."""
