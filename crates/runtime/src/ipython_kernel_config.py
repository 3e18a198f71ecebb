# Kernel settings of Atelier's built-in image (written to PREFIX/etc/ipython by the local
# runtime; IPython kernels read config files from there). They take ~1.5 ms off every cell
# execution; measured with ipykernel 7.4 on the CI machine kind, an `1+1` execute round trip
# went from ~3.4 ms to ~2.2 ms.

# ipykernel sleeps 0.5 ms before every execute_reply, "to mitigate" outputs reaching clients
# after the reply. Outputs and the reply travel on different channels, whose relative order
# the Jupyter protocol never promised: JupyterLab waits for both the reply and the `idle`
# status before it calls a cell done.
c.IPythonKernel._execute_sleep = 0.0

# Every execution flushes stdout and stderr six times (before and after the display hook,
# before the reply), and each flush waits for a round trip to the kernel's IO thread even
# with nothing to send. Skip the wait when nothing was written since the last flush;
# anything written still goes through the original, waiting flush.
from ipykernel.iostream import OutStream as _OutStream  # noqa: E402

if not getattr(_OutStream, "_atelier_fast_flush", False):
    _waiting_flush = _OutStream.flush

    def _flush(self):
        # Should a later ipykernel rename these, every flush waits again.
        if (getattr(self, "_flush_pending", True)
                or getattr(self, "_subprocess_flush_pending", True)
                or getattr(self, "_buffers", True)):
            _waiting_flush(self)

    _OutStream.flush = _flush
    _OutStream._atelier_fast_flush = True
