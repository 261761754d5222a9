from __future__ import annotations

import subprocess
import sys


def test_import_initialises_neither_cuda_nor_tensorrt() -> None:
    code = (
        "import sys, autoprune, autoprune.api, autoprune.cli, torch;"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised';"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_import_is_lazy() -> None:
    code = "import sys, autoprune; assert 'torch' not in sys.modules and 'autoprune.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
