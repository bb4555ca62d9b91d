"""What one request may hold: the rules the server enforces, reasoning models, new settings for built requests."""
