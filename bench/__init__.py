"""joulebench: measures how many tokens a GPU makes from a joule, and what that is worth."""

__version__ = "0.1.0"
