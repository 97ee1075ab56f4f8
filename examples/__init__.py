"""Examples to copy from; not part of the installed glucotwin package (see examples/README.md)."""
