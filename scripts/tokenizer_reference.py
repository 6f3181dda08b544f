"""Writes test/fixtures/tokenizer/smollm2.json: how transformers (pip install transformers gguf)
tokenizes varied text with the tokenizer in SmolLM2-135M-Instruct.Q4_1.gguf's metadata, how it
decodes those ids, and the chat template's text for a few conversations. Needs the model in the
cache (scripts/fetch-model.sh). It also saves that tokenizer as a Hugging Face folder
(tokenizer.json, tokenizer_config.json) in the cache, for the tests of the tokenizer.json path.
Run from the repository root.
"""
import json
import os
from importlib.metadata import version

from transformers import AutoTokenizer

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR = os.environ.get("SMELT_MODELS_DIR", os.path.expanduser("~/.cache/smelt/models"))
tok = AutoTokenizer.from_pretrained(DIR, gguf_file=NAME)
tok.save_pretrained(os.path.join(DIR, "SmolLM2-135M-Instruct-tokenizer"))

TEXTS = [
    "Hello, world!",
    "",
    " ",
    "   leading and trailing   ",
    "runs  of   spaces    here",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\r\nwindows\n",
    "digits 0 12 345 6789 3.14159 1,000,000 -42 1e10",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}  # comment\n",
    "const s = `${a}` && b !== c || d >= 0;\n\tconsole.log(s);",
    "<|im_start|>user\nhi<|im_end|>",
    "text<|endoftext|>more<|im_end|>",
    "I'm you're they'll we've she'd it's DON'T",
    "URL https://example.com/a?b=c&d=e#f and email a.b@c.org",
    "\u00a0non-breaking\u2009thin\u200bzero-width",
    "mixed123abc 4x4 v2.0.1 x86_64",
]

cases = []
for text in TEXTS:
    ids = tok(text, add_special_tokens=True).input_ids
    plain = tok(text, add_special_tokens=False).input_ids
    cases.append({
        "text": text, "ids": ids, "idsPlain": plain,
        "decoded": tok.decode(ids, skip_special_tokens=False),
        "decodedSkip": tok.decode(ids, skip_special_tokens=True),
    })

CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}],
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the tensor cross the road?"},
        {"role": "user", "content": "Why?\nTell me."},
    ],
]
chats = []
for messages in CHATS:
    for gen in (False, True):
        chats.append({"messages": messages, "addGenerationPrompt": gen,
                      "text": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)})

with open("test/fixtures/tokenizer/smollm2.json", "w") as f:
    json.dump({
        "transformers": version("transformers"), "model": NAME,
        "bosTokenId": tok.bos_token_id, "eosTokenId": tok.eos_token_id,
        "cases": cases, "chats": chats,
    }, f, indent=1, ensure_ascii=False)
