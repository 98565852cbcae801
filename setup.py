"""Build of fastnn._C: CPU kernels always, CUDA kernels when a toolkit and a CUDA torch are present.

FASTNN_CUDA=1 forces the CUDA build (and fails loudly if it is impossible), FASTNN_CUDA=0 turns it
off, unset means "build CUDA when possible". TORCH_CUDA_ARCH_LIST defaults to 8.0;9.0 (+PTX).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    flag = os.environ.get("FASTNN_CUDA", "").strip()
    torch_has_cuda = torch.version.cuda is not None
    toolkit = cpp_extension.CUDA_HOME is not None
    if flag == "0":
        return False
    if flag == "1":
        if not torch_has_cuda:
            sys.exit("FASTNN_CUDA=1 but this torch (%s) is a CPU-only build" % torch.__version__)
        if not toolkit:
            sys.exit("FASTNN_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME, e.g. /usr/local/cuda)")
        return True
    if flag:
        sys.exit("FASTNN_CUDA must be 0, 1 or unset, got %r" % flag)
    return torch_has_cuda and toolkit


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extension():
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
           "-Wno-unused-function"]
    link = ["-fopenmp"]
    if os.environ.get("FASTNN_SANITIZE", "") == "1":  # make sanitize: ASan + UBSan (CPU build)
        san = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-omit-frame-pointer"]
        cxx = cxx + san + ["-g", "-O1"]
        link = link + san
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
                  + glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
    cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*_cuda*.cpp"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
    define = []
    # FASTNN_CPU_TABLES=base builds the portable CPU table alone: a quick build for GPU visits
    # (benchmarks/gpu_check.sh), where the per-ISA tables are most of the compile time.
    tables = os.environ.get("FASTNN_CPU_TABLES", "").strip()
    if tables not in ("", "all", "base"):
        sys.exit("FASTNN_CPU_TABLES must be 'all' or 'base', got %r" % tables)
    if tables == "base":
        isa_dir = os.path.join("csrc", "cpu_isa") + os.sep
        sources = [s for s in sources if not s.startswith(isa_dir)
                   or os.path.basename(s).startswith(("base", "cpu_isa"))]
        cxx = cxx + ["-DFASTNN_CPU_BASE_ONLY=1"]
    use_cuda = want_cuda()
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        define.append(("FASTNN_WITH_CUDA", "1"))
        include_dirs = [os.path.join(ROOT, "csrc")]
        # cuBLAS headers (included by ATen's CUDA headers) ship in the nvidia wheels beside a
        # pip-installed CUDA torch.
        for sp in sys.path:
            for sub in ("nvidia/cu13/include", "nvidia/cublas/include", "nvidia/cuda_runtime/include"):
                d = os.path.join(sp, sub)
                if os.path.isdir(d):
                    include_dirs.append(d)
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return cpp_extension.CUDAExtension(
            "fastnn._C", sources, include_dirs=include_dirs, define_macros=define,
            extra_compile_args={"cxx": cxx + ["-DFASTNN_WITH_CUDA=1"], "nvcc": nvcc + ["-DFASTNN_WITH_CUDA=1"]},
            extra_link_args=["-fopenmp"])
    sources = [s for s in sources if s not in cuda_sources]
    return cpp_extension.CppExtension(
        "fastnn._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx}, extra_link_args=link)


# Metadata lives in pyproject.toml.
setup(
    packages=find_packages(include=["fastnn", "fastnn.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
