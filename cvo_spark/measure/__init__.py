"""Stage `measure`: uplift against control and incremental revenue per campaign."""
