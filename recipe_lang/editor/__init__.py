"""Editor support for .ftr recipes."""
