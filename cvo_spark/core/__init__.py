"""The bottom layer: config, the offer catalog (data in conf/, read by several stages),
errors, session, the one IO layer, schemas, privacy and the stage contract. Imports none
of the stage packages."""
