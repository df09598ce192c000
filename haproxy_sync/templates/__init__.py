"""The built-in haproxy.cfg template (data only; a package so that setuptools ships it as package data)."""
