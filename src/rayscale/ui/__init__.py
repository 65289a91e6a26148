"""`rayscale ui`: the history of local clusters as web pages on loopback."""
