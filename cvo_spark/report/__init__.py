"""Stage `report`: the report's data, charts and HTML, and the console summary."""
