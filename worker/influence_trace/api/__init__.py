"""The API shared by the operator and the worker: the manifest (``spec``), the status (``status``), the
CRD generated from both (``crd``), the worker-to-operator contract (``contract``) and the model shapes
the manifest can name (``architectures``). Imports only pydantic and yaml: no torch, no other layer."""
