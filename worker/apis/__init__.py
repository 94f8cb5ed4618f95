"""One area per API: its scope field, targets, operations table, wire format and adapter.

Nothing outside ``worker/apis/<api>/`` names an API except the catalog's list of areas in
``worker.registry``; what is shared by areas is here: ``base`` (what an area declares, pure),
``adapters`` (the adapter side) and ``factory`` (adapters built for the pipeline).
"""
