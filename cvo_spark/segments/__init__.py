"""Stage `segments`: value tiers, lifecycle, K-Means personas, strategic matrix, RFM, B2B clusters."""
