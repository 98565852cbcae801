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


# The per-ISA kernel tables (csrc/cpu_isa/<table>*.cpp; cpu_isa.cpp's Isa enum), base first. The
# amx_bf16 sources hold the amx_bf16_emulated table too, which runs where avx512_bf16 does.
ISA_TABLES = ("base", "avx2", "avx512", "avx512_bf16", "amx_bf16")


def table_of(source):
    """The table a csrc/cpu_isa source belongs to (cpu_isa.cpp, the dispatcher, counts as base)."""
    name = os.path.basename(source)
    if name.startswith("cpu_isa"):
        return "base"
    return max((t for t in ISA_TABLES if name.startswith(t)), key=len)


def cpu_runs_tables():
    """The tables this machine's CPU runs, by /proc/cpuinfo's flags (cpu_isa.cpp's supported())."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), set())
    except OSError:
        flags = set()
    runs = set()
    if {"avx2", "fma"} <= flags:
        runs.add("avx2")
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "fma"} <= flags:
        runs.add("avx512")
        if "avx512_bf16" in flags:
            runs |= {"avx512_bf16", "amx_bf16"}
    return runs


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extension():
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
           "-Wno-unused-function"]
    link = ["-fopenmp"]
    if os.environ.get("FASTNN_SANITIZE", "") == "1":  # make sanitize: ASan + UBSan (CPU build)
        san = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-omit-frame-pointer"]
        # -g1: line tables for the reports' stack traces (with -g, avx2 Adam's ASan object took
        # 384 s and a 215 MB assembly file).
        cxx = cxx + san + ["-g1", "-O1"]
        link = link + san
    else:
        # No debug info (Python's CFLAGS ask for -g): a third of the compile time and most of _C.so.
        cxx = cxx + ["-g0"]
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
                  + glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
    cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*_cuda*.cpp"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
    define = []
    # FASTNN_CPU_TABLES picks the per-ISA kernel tables compiled in (most of the compile time):
    # all (default), base (the portable table alone: GPU visits, the CUDA compile check) or native
    # (base and the tables this machine's CPU runs: the sanitizer build, which can only test those).
    tables = os.environ.get("FASTNN_CPU_TABLES", "").strip() or "all"
    if tables not in ("all", "base", "native"):
        sys.exit("FASTNN_CPU_TABLES must be 'all', 'base' or 'native', got %r" % tables)
    if tables != "all":
        keep = {"base"} | (cpu_runs_tables() if tables == "native" else set())
        isa_dir = os.path.join("csrc", "cpu_isa") + os.sep
        sources = [s for s in sources if not s.startswith(isa_dir) or table_of(s) in keep]
        cxx = cxx + ["-DFASTNN_CPU_NO_%s=1" % t.upper() for t in ISA_TABLES if t not in keep]
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
