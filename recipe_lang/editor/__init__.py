"""Editor support for .ftr recipes: highlighting (Pygments, shared keyword sets) and the language server."""
