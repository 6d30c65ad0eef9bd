"""Beyond one machine: what rebuilds a session, kept in the bucket beside its history, a
catalog per machine, `remote_list` and `restore` (docs/remote.md).

Modules: layout (object keys, machine names), split (a session file cut into parts and spliced
back), parts (uploading the parts that changed), catalog (this machine's catalog, written
coalesced), reader (catalogs and objects read back, checked), restore (writing a session the
agent's way), service (the two ops).
"""
