"""callcenter: a hotline server that sits beside an Asterisk PBX."""

__version__ = "0.1.0"
