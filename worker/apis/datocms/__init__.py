"""DatoCMS: bulk jobs on items and uploads, one rate limit per API token."""
