"""Prices, estimates before a submit and the billed cost after it, the cheapest model for a file."""
