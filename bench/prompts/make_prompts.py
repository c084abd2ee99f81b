"""Write the prompt sets of the SmolLM2 predictor: ``distill.jsonl`` (self-distillation) and ``eval-chat.jsonl``.

    python -m bench.prompts.make_prompts

Every request below was written for this project. ``distill.jsonl`` combines request
templates with subjects (code, explanations, lists, emails, rewriting, small math,
the Python standard library) and adds raw code prefixes of the standard library's
*train* split (``{"prefix": ...}``: continued without the chat template).
``eval-chat.jsonl`` holds separately written chat requests; the evaluation's code
prompts are prefixes of the standard library's *held-out* split (``bench.e2e.run``).
A test checks that no evaluation request appears in the distillation set. The code
prefixes come from the running Python's standard library, so another Python version
writes other prefixes: the committed ``distill.jsonl`` is the one the predictor used.
Records: ``{"id": str, "prompt": str}`` (a user message) or ``{"id": str, "prefix": str}``.
"""

import hashlib
import json
import random
from pathlib import Path

from specdec.training.corpus import read_texts, stdlib_files

HERE = Path(__file__).resolve().parent

CODE_TASKS = [
    "checks whether a string is a palindrome", "returns the n-th Fibonacci number iteratively",
    "merges two sorted lists into one sorted list", "counts the words in a text file",
    "removes duplicates from a list while keeping the order", "flattens a nested list of any depth",
    "converts a temperature from Celsius to Fahrenheit", "finds the largest element of a list without max()",
    "reverses the words of a sentence", "checks whether a number is prime",
    "computes the factorial of n recursively", "returns the most common character in a string",
    "groups a list of words by their first letter", "parses a date string like 2024-03-15 into a date object",
    "reads a CSV file and returns a list of dictionaries", "validates an email address with a regular expression",
    "computes the average of a list of numbers, ignoring None values", "splits a list into chunks of size n",
    "returns the intersection of two lists", "transposes a matrix given as a list of lists",
    "implements binary search on a sorted list", "counts vowels in a string",
    "converts a Roman numeral to an integer", "generates all permutations of a string",
    "computes the greatest common divisor of two numbers", "checks whether two strings are anagrams",
    "sorts a list of dictionaries by a given key", "finds the second largest number in a list",
    "returns the sum of the digits of an integer", "capitalizes the first letter of every word",
    "implements a simple stack class with push, pop and peek", "implements a queue using two stacks",
    "computes the running total of a list", "checks whether brackets in a string are balanced",
    "converts a binary string to an integer", "finds all files with a given extension in a folder",
    "retries a function call up to three times when it raises an exception",
    "measures how long a function takes to run (a decorator)", "caches the results of an expensive function",
    "writes a list of dictionaries to a JSON file", "returns the longest common prefix of a list of strings",
    "rotates a list by k positions", "computes the dot product of two vectors",
    "counts the lines, words and characters of a file", "removes all punctuation from a string",
    "checks whether a year is a leap year", "finds the missing number in a list of 1..n",
    "implements bubble sort", "implements merge sort", "implements quicksort",
    "returns the n largest values of a dictionary", "converts a nested dictionary into dotted keys",
    "generates a random password of a given length", "computes the median of a list",
    "checks whether a linked list has a cycle", "implements a least-recently-used cache class",
    "downloads nothing but builds a URL with query parameters from a dictionary",
    "pretty-prints a table of rows with aligned columns", "counts how often each word appears in a text",
    "computes compound interest", "converts seconds into hours, minutes and seconds",
]
CODE_FORMS = [
    "Write a Python function that {}.", "Can you show me Python code that {}?",
    "I need a short Python function that {}. Please add a docstring.",
    "Write a Python function that {} and include a few example calls.",
    "Write a JavaScript function that {}.",
]
CONCEPTS = [
    "recursion", "a hash table", "Big O notation", "object-oriented programming", "a REST API",
    "the difference between a list and a tuple in Python", "garbage collection", "a race condition",
    "version control with git", "unit testing", "a database index", "the TCP handshake",
    "how DNS works", "public-key cryptography", "what a compiler does", "virtual memory",
    "photosynthesis", "the water cycle", "inflation", "compound interest", "supply and demand",
    "how vaccines work", "why the sky is blue", "the greenhouse effect", "how a rainbow forms",
    "plate tectonics", "the difference between weather and climate", "how batteries store energy",
    "what a black hole is", "how the heart pumps blood", "the scientific method", "machine learning",
    "a neural network", "overfitting in machine learning", "the difference between RAM and storage",
    "how the internet routes packets", "what an operating system does", "a linked list",
    "dynamic programming", "the difference between a process and a thread", "what JSON is",
    "regular expressions", "how a search engine ranks pages", "what a virtual environment is in Python",
    "list comprehensions in Python", "decorators in Python", "generators in Python",
    "exceptions and error handling in Python", "what an API key is", "how encryption protects passwords",
]
CONCEPT_FORMS = [
    "Explain {} in simple terms.", "What is {}? Give a short explanation.",
    "Explain {} to a beginner, with an example.", "Can you describe {} in three or four sentences?",
]
LIST_ITEMS = [
    "tips for learning a new programming language", "healthy breakfast ideas", "ways to save money on groceries",
    "good habits for writing clean code", "things to pack for a weekend camping trip", "ways to improve sleep",
    "benefits of regular exercise", "questions to ask in a job interview", "ideas for a birthday party",
    "ways to reduce stress at work", "common mistakes beginners make in Python", "houseplants that are easy to care for",
    "reasons to learn a second language", "ways to make a presentation more engaging", "tips for writing a good resume",
    "things to check before submitting code for review", "ideas for a short story", "ways to stay focused while studying",
    "classic novels worth reading", "features of a good password", "steps to start a vegetable garden",
    "ways to be more productive in the morning", "fun indoor activities for a rainy day", "uses of baking soda",
    "tips for a long flight", "ways to conserve water at home", "signs that a program has a memory leak",
    "topics to cover in a beginner's Python course", "things to consider when buying a laptop",
    "ways to practice public speaking", "data structures every programmer should know",
    "tips for working from home", "ways to make a website load faster", "simple dinner recipes",
]
LIST_FORMS = ["List five {}.", "Give me a list of {}.", "What are some {}? Use a numbered list.", "Name three {} and explain each briefly."]
EMAILS = [
    "to my manager asking for a day off next Friday", "to a colleague thanking them for their help on a project",
    "to a customer apologizing for a late delivery", "to my landlord reporting a broken heater",
    "to a teacher asking about my child's progress", "to a client following up on an unpaid invoice",
    "inviting the team to a lunch on Thursday", "to a professor asking for a recommendation letter",
    "declining a meeting invitation politely", "to a hotel asking to change my reservation dates",
    "to a friend congratulating them on their new job", "to a supplier asking for a price quote",
    "announcing a new office opening hours schedule", "to a recruiter accepting a job offer",
    "to my neighbour about noise late at night", "to the IT team reporting that my laptop will not start",
    "to a conference organizer asking about registration", "to a team announcing the release of version 2.0",
    "to a customer welcoming them to our service", "to my bank asking why I was charged a fee",
]
EMAIL_FORMS = ["Write a short email {}.", "Draft a polite email {}.", "Write a brief, friendly email {}."]
SENTENCES = [
    "The meeting was postponed because of the fact that many people were not able to attend it.",
    "We are going to need more time in order to finish the project on schedule.",
    "The results of the experiment were very good and we were happy about them.",
    "Please make sure to send me the report as soon as it is possible for you.",
    "The app is slow and it crashes a lot and users don't like it.",
    "I think that maybe we should consider the option of hiring another developer.",
    "Due to the rain, the football game that was planned for today has been cancelled.",
    "Our new product is really good and you should totally buy it now.",
    "The code works but it is hard to read and nobody understands it.",
    "He was very tired after the long day, so he went to bed early.",
    "The company has decided to make changes to the way that vacation days are approved.",
    "I'm writing to let you know that the package you ordered has been shipped.",
    "There are a lot of reasons why learning to cook at home is a good idea.",
    "The book was long and boring but the ending was surprisingly good.",
    "Customers can return items within thirty days if they have the receipt.",
]
REWRITE_FORMS = [
    "Rewrite this sentence to be more concise: \"{}\"", "Make this sentence more formal: \"{}\"",
    "Rewrite this in a friendly, casual tone: \"{}\"", "Fix the style of this sentence and make it clearer: \"{}\"",
    "Summarize this sentence in a few words: \"{}\"",
]
STDLIB = [
    ("os", "list the files in a directory"), ("os.path", "join two path components"),
    ("pathlib", "read a text file"), ("pathlib", "find all .txt files recursively"),
    ("json", "save a dictionary to a file"), ("json", "parse a JSON string"), ("csv", "write rows to a CSV file"),
    ("datetime", "get the difference between two dates"), ("datetime", "format the current time"),
    ("collections", "count items with Counter"), ("collections", "use a defaultdict of lists"),
    ("collections", "create a namedtuple"), ("itertools", "chain several lists together"),
    ("itertools", "get all combinations of a list"), ("functools", "cache a function with lru_cache"),
    ("functools", "use partial to fix an argument"), ("re", "find all numbers in a string"),
    ("re", "replace multiple spaces with one"), ("random", "shuffle a list"), ("random", "pick a random element"),
    ("math", "round a number up"), ("statistics", "compute the mean and standard deviation"),
    ("subprocess", "run a shell command and capture its output"), ("sys", "read command-line arguments"),
    ("argparse", "parse command-line options"), ("logging", "write log messages to a file"),
    ("time", "measure elapsed time"), ("shutil", "copy a whole directory"), ("tempfile", "create a temporary file"),
    ("threading", "run two functions at the same time"), ("queue", "pass work between threads"),
    ("sqlite3", "create a table and insert a row"), ("urllib.parse", "split a URL into its parts"),
    ("hashlib", "compute the SHA-256 of a file"), ("base64", "encode bytes as text"), ("zipfile", "extract an archive"),
    ("heapq", "get the three smallest items"), ("bisect", "insert into a sorted list"), ("dataclasses", "define a simple data class"),
    ("enum", "define a set of named constants"), ("typing", "annotate a function that returns a list of strings"),
    ("contextlib", "write a context manager with a generator"), ("unittest", "write a simple test case"),
    ("string", "get all ASCII letters"), ("textwrap", "wrap a long paragraph"), ("pprint", "print a nested dictionary nicely"),
    ("decimal", "add money amounts without rounding errors"), ("fractions", "add two fractions"),
    ("glob", "find files matching a pattern"), ("copy", "make a deep copy of a nested list"),
]
STDLIB_FORMS = [
    "How do I use Python's {} module to {}?", "Show me how to {1} with the {0} module in Python.",
    "In Python, what is the easiest way to {1}? Use the {0} module.",
]
FUNCTIONS = [
    "enumerate()", "zip()", "sorted()", "map()", "filter()", "any()", "all()", "isinstance()", "range()",
    "str.join()", "str.split()", "str.strip()", "dict.get()", "dict.setdefault()", "list.sort()", "set.union()",
    "open()", "print()", "input()", "len()", "sum()", "min()", "reversed()", "getattr()", "round()",
]
FUNCTION_FORMS = ["What does {} do in Python? Give an example.", "Explain the Python built-in {} with a short example."]
QUESTIONS = [
    "What is the capital of Australia?", "How many days are there in a leap year?", "Who wrote Pride and Prejudice?",
    "What is the boiling point of water in Fahrenheit?", "Why do cats purr?", "How far is the Moon from the Earth?",
    "What causes the seasons on Earth?", "What is the largest ocean?", "How do airplanes stay in the air?",
    "What is the difference between a virus and a bacterium?", "Why is exercise good for the brain?",
    "What should I do if my code runs fine locally but fails on the server?",
    "How can I become better at solving programming puzzles?", "What is a good way to learn touch typing?",
    "How do I politely say no to extra work?", "What is the best way to memorize vocabulary?",
    "Should I learn Python or JavaScript first?", "What are the planets of the solar system?",
    "How does a refrigerator keep food cold?", "What is the tallest mountain in Africa?",
]


def math_prompts(rng: random.Random) -> list[str]:
    """Small arithmetic and word problems with fixed random numbers."""
    prompts = []
    for _ in range(12):
        a, b = rng.randint(12, 99), rng.randint(3, 29)
        prompts.append(rng.choice(["What is {} times {}?", "Compute {} multiplied by {}.", "What is {} plus {}?"]).format(a, b))
    for _ in range(12):
        apples, eaten, price = rng.randint(8, 40), rng.randint(1, 7), rng.randint(2, 9)
        prompts.append(rng.choice([
            f"I have {apples} apples and eat {eaten}. How many are left?",
            f"A book costs {price} dollars. How much do {apples} books cost?",
            f"A train travels {apples * 10} km in {eaten} hours. What is its average speed?",
            f"If {eaten} friends share {apples * eaten} cookies equally, how many does each get?",
        ]))
    for _ in range(8):
        n = rng.randint(10, 60)
        prompts.append(rng.choice([f"What is {n} percent of {n * 4}?", f"Is {n * 2 + 1} a prime number? Explain.",
                                   f"What is the square root of {n * n}?", f"Convert {n} kilometers to miles."]))
    return prompts


def chat_prompts() -> list[str]:
    rng = random.Random(8)
    prompts = [form.format(task) for task in CODE_TASKS for form in rng.sample(CODE_FORMS, 2)]
    prompts += [rng.choice(CONCEPT_FORMS).format(c) for c in CONCEPTS]
    prompts += [rng.choice(LIST_FORMS).format(item) for item in LIST_ITEMS]
    prompts += [form.format(e) for e in EMAILS for form in rng.sample(EMAIL_FORMS, 2)]
    prompts += [form.format(s) for s in SENTENCES for form in rng.sample(REWRITE_FORMS, 2)]
    prompts += [rng.choice(STDLIB_FORMS).format(module, task) for module, task in STDLIB]
    prompts += [rng.choice(FUNCTION_FORMS).format(f) for f in FUNCTIONS]
    prompts += QUESTIONS + math_prompts(rng)
    return list(dict.fromkeys(prompts))


def code_prefixes(count: int, offsets=(0,), salt: int = 0, used=frozenset()) -> list[str]:
    """Prefixes (about 400-1400 characters, cut at a line end) of ``count`` train-split stdlib files:
    every third file from each of ``offsets``, the cut set by byte ``salt`` of the name's hash,
    none of ``used``."""
    prefixes = []
    files = [f for offset in offsets for f in stdlib_files("train")[offset::3]]
    for path, text in zip(files, read_texts(files)):
        cut = text.rfind("\n", 0, 400 + hashlib.sha256(path.name.encode()).digest()[salt] * 4)
        if cut > 200 and len(text) > cut + 1500 and text[: cut + 1] not in used:
            prefixes.append(text[: cut + 1])
        if len(prefixes) == count:
            break
    return prefixes


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    chats = [{"id": f"chat-{i:04d}", "prompt": p} for i, p in enumerate(chat_prompts())]
    codes = [{"id": f"code-{i:04d}", "prefix": p} for i, p in enumerate(code_prefixes(120))]
    write_jsonl(HERE / "distill.jsonl", chats + codes)
    print(f"wrote {len(chats)} chat requests and {len(codes)} code prefixes to {HERE / 'distill.jsonl'}")


if __name__ == "__main__":
    main()
