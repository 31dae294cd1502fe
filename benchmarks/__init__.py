"""Benchmarks and checks that print numbers for the README: photo stages (`photo`), clips
(`video`), the served API under load (`serving`) and under hostile input (`reliability`). They read
the data folder from one setting (`data.DATA`), never from the installed package's location."""
