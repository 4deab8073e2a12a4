"""The Asterisk edge: the only package that knows AMI/AGI wire details or imports panoramisk."""
