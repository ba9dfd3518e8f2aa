"""omnijet-weaver: the OmniJet-alpha foundation model for jets as a weaver-core plugin."""

__version__ = "0.1.0"
