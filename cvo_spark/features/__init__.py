"""Stage `features`: point-in-time subscriber and B2B features as of a date."""
