"""Wire formats for tensors: `json_tensors`, `safetensors`, and `negotiate` (choosing
between them from Content-Type and Accept). `codec` never imports FastAPI, the
optimizers or the stores; import the modules themselves."""
