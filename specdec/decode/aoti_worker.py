"""Build one AOTInductor package from a saved exported program: run by :func:`specdec.decode.packages.load_or_build`
as a process of its own (by its path, so it imports torch and nothing of this package).

    python aoti_worker.py EXPORTED.pt2 PACKAGE.pt2 '{"freezing": true}' THREADS
"""

import json
import sys

import torch


def main() -> None:
    exported_path, package_path, configs, threads = sys.argv[1:]
    torch.set_num_threads(int(threads))
    exported = torch.export.load(exported_path)
    with torch.no_grad():  # freezing applies only without autograd
        torch._inductor.aoti_compile_and_package(exported, package_path=package_path, inductor_configs=json.loads(configs))


if __name__ == "__main__":
    main()
