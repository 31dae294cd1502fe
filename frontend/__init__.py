"""QMask's web page (Streamlit): `app.py` is the page, `client.py` talks to the TorchServe API."""
