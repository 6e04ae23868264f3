"""segdl's version: a leaf module, so that what needs the version never imports the package."""

__version__ = "0.1.0"
