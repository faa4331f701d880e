"""more4d: one image + a prompt -> a dynamic 4D scene -> video along any camera path (MoRe4D)."""

__version__ = "0.1.0"
