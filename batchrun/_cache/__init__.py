"""Never paying twice for the same request: a response cache shared by runs and
processes (`store`, one SQLite file) and the grouping of repeated requests inside one
run (`dedup`)."""
