"""Drop-in integrations of fusekit operators into model libraries."""
