"""Bloomreach Engagement: catalog items in bulk, one rate limit per catalog."""
