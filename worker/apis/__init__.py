"""One area per API: its targets, operations table, wire format and adapter.

Nothing outside ``worker/apis`` names an API except ``worker.registry`` (which collects the
areas' specs) and ``worker.settings`` (which loads targets through it).
"""
