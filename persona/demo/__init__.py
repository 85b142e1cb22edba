"""Bundled demo data (an attributed sample of UCI Online Retail) and the script that builds it."""
