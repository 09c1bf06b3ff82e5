"""Stage `offers`: the catalog, the offer engine, the publish checks and `cvo explain`."""
