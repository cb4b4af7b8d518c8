"""vidclf: folders of video clips in, a trained video classifier out."""

__version__ = "0.1.0"
