from .backend import BACKENDS, get_scan_backend, resolve_backend, set_scan_backend
from .selective_scan import bi_selective_scan_fn, bi_selective_scan_ref, selective_scan_fn, selective_scan_ref
