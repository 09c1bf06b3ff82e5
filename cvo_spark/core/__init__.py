"""The bottom layer: config, errors, session, the one IO layer, schemas, privacy and the
stage contract. Imports none of the stage packages."""
