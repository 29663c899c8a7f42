"""The portal's services layer: plain Python, never imports streamlit."""
