"""Below everything: configuration, the HTTP client, output and errors, files, the clock, platform differences."""
