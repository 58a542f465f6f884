"""Prompt templates for query generation: the only place prompts live.

MLDR's recipe: give the LLM one paragraph of a long document and ask for one specific question that the
paragraph answers. Small local models follow an instruction written *in the target language* far better
than "answer in German" tacked onto an English instruction, so languages we know get their own template;
others fall back to English naming the language. Bump `PROMPT_VERSION` on any change to the text: it is
stored with every output and is part of the request cache key (the messages are hashed).
"""

from __future__ import annotations

import json
from typing import Any

PROMPT_VERSION = "q-v2"

# JSON schema for structured output (llama.cpp enforces it with a grammar; OpenAI with strict mode).
QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 5, "maxLength": 300}},
    "required": ["question"],
    "additionalProperties": False,
}

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian", "ja": "Japanese", "zh": "Chinese",
    "cs": "Czech", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "hu": "Hungarian", "ro": "Romanian",
    "tr": "Turkish", "ko": "Korean", "id": "Indonesian", "sr": "Serbian", "sl": "Slovenian", "hr": "Croatian",
    "vi": "Vietnamese", "ar": "Arabic", "el": "Greek", "he": "Hebrew", "hi": "Hindi", "th": "Thai",
}  # fmt: skip

SYSTEM = (
    'You write search queries for a retrieval dataset. Reply only with JSON of the form {"question": "..."}.'
)

# {title} is the document title, {paragraph} the chosen paragraph. Each says: one specific question, answerable
# from the paragraph, understandable without it (no "it"/"this" pointing into the passage), in this language.
TEMPLATES: dict[str, str] = {
    "en": (
        "Document: {title}\nParagraph:\n{paragraph}\n\n"
        "Write one specific question in English that this paragraph answers. The question must make sense "
        "on its own: name the program or topic instead of using words like 'it' or 'this'. "
        'Reply as JSON: {{"question": "..."}}'
    ),
    "de": (
        "Dokument: {title}\nAbsatz:\n{paragraph}\n\n"
        "Schreibe eine konkrete Frage auf Deutsch, die dieser Absatz beantwortet. Die Frage muss für sich "
        "allein verständlich sein: Nenne das Programm oder Thema, statt Wörter wie 'es' oder 'dies' zu "
        'verwenden. Antworte als JSON: {{"question": "..."}}'
    ),
    "fr": (
        "Document : {title}\nParagraphe :\n{paragraph}\n\n"
        "Écris une question précise en français à laquelle ce paragraphe répond. La question doit se "
        "comprendre seule : nomme le programme ou le sujet au lieu d'utiliser « il » ou « cela ». "
        'Réponds en JSON : {{"question": "..."}}'
    ),
    "es": (
        "Documento: {title}\nPárrafo:\n{paragraph}\n\n"
        "Escribe una pregunta concreta en español que este párrafo responda. La pregunta debe entenderse "
        "por sí sola: nombra el programa o el tema en lugar de usar palabras como 'esto' o 'él'. "
        'Responde en JSON: {{"question": "..."}}'
    ),
    "it": (
        "Documento: {title}\nParagrafo:\n{paragraph}\n\n"
        "Scrivi una domanda precisa in italiano a cui questo paragrafo risponde. La domanda deve essere "
        "comprensibile da sola: nomina il programma o l'argomento invece di usare parole come 'esso' o "
        '\'questo\'. Rispondi in JSON: {{"question": "..."}}'
    ),
    "pt": (
        "Documento: {title}\nParágrafo:\n{paragraph}\n\n"
        "Escreva uma pergunta específica em português que este parágrafo responde. A pergunta deve fazer "
        "sentido sozinha: nomeie o programa ou o assunto em vez de usar palavras como 'isto' ou 'ele'. "
        'Responda em JSON: {{"question": "..."}}'
    ),
    "nl": (
        "Document: {title}\nAlinea:\n{paragraph}\n\n"
        "Schrijf één concrete vraag in het Nederlands die deze alinea beantwoordt. De vraag moet op zichzelf "
        "begrijpelijk zijn: noem het programma of onderwerp in plaats van woorden als 'het' of 'dit'. "
        'Antwoord in JSON: {{"question": "..."}}'
    ),
    "pl": (
        "Dokument: {title}\nAkapit:\n{paragraph}\n\n"
        "Napisz jedno konkretne pytanie po polsku, na które odpowiada ten akapit. Pytanie musi być "
        "zrozumiałe samo w sobie: podaj nazwę programu lub tematu zamiast słów takich jak 'to' lub 'on'. "
        'Odpowiedz w formacie JSON: {{"question": "..."}}'
    ),
    "ru": (
        "Документ: {title}\nАбзац:\n{paragraph}\n\n"
        "Напиши один конкретный вопрос на русском языке, на который отвечает этот абзац. Вопрос должен "
        "быть понятен сам по себе: называй программу или тему вместо слов «он» или «это». "
        'Ответь в формате JSON: {{"question": "..."}}'
    ),
    "uk": (
        "Документ: {title}\nАбзац:\n{paragraph}\n\n"
        "Напиши одне конкретне питання українською мовою, на яке відповідає цей абзац. Питання має бути "
        "зрозумілим саме по собі: називай програму або тему замість слів «він» чи «це». "
        'Відповідай у форматі JSON: {{"question": "..."}}'
    ),
    "ja": (
        "文書: {title}\n段落:\n{paragraph}\n\n"
        "この段落が答えとなる具体的な質問を日本語で一つ書いてください。質問はそれだけで意味が通じるように、"
        "「これ」「それ」ではなくプログラム名や話題を明示してください。"
        'JSON で答えてください: {{"question": "..."}}'
    ),
    "zh": (
        "文档：{title}\n段落：\n{paragraph}\n\n"
        "请用中文写一个具体的问题，该问题的答案就在这个段落中。问题必须能够独立理解："
        "请写出程序或主题的名称，不要使用“它”或“这个”之类的词。"
        '请用 JSON 回答：{{"question": "..."}}'
    ),
}

# One worked example per template language, given as an earlier turn of the conversation: measured on man pages,
# 135M-270M models answer in the prompt's language and keep to the JSON shape far more often with it.
# (paragraph, question) about `ls -a`, a page every system has.
EXAMPLES: dict[str, tuple[str, str]] = {
    "en": ("By default, ls does not list files whose names start with a dot. The option -a shows these hidden entries as well.",
           "Which ls option also lists hidden files whose names start with a dot?"),
    "de": ("Standardmäßig zeigt ls keine Dateien an, deren Name mit einem Punkt beginnt. Die Option -a listet auch diese versteckten Einträge auf.",
           "Mit welcher Option zeigt ls auch versteckte Dateien an, deren Name mit einem Punkt beginnt?"),
    "fr": ("Par défaut, ls n'affiche pas les fichiers dont le nom commence par un point. L'option -a affiche aussi ces entrées cachées.",
           "Quelle option de ls affiche aussi les fichiers cachés dont le nom commence par un point ?"),
    "es": ("De forma predeterminada, ls no muestra los archivos cuyo nombre empieza por un punto. La opción -a muestra también estas entradas ocultas.",
           "¿Qué opción de ls muestra también los archivos ocultos cuyo nombre empieza por un punto?"),
    "it": ("Per impostazione predefinita, ls non mostra i file il cui nome inizia con un punto. L'opzione -a mostra anche queste voci nascoste.",
           "Quale opzione di ls mostra anche i file nascosti il cui nome inizia con un punto?"),
    "pt": ("Por padrão, o ls não mostra arquivos cujo nome começa com um ponto. A opção -a mostra também essas entradas ocultas.",
           "Qual opção do ls mostra também os arquivos ocultos cujo nome começa com um ponto?"),
    "nl": ("Standaard toont ls geen bestanden waarvan de naam met een punt begint. De optie -a toont ook deze verborgen items.",
           "Met welke optie toont ls ook verborgen bestanden waarvan de naam met een punt begint?"),
    "pl": ("Domyślnie ls nie wyświetla plików, których nazwa zaczyna się od kropki. Opcja -a pokazuje również te ukryte pozycje.",
           "Która opcja ls pokazuje również ukryte pliki, których nazwa zaczyna się od kropki?"),
    "ru": ("По умолчанию ls не показывает файлы, имена которых начинаются с точки. Параметр -a выводит и эти скрытые записи.",
           "Какой параметр ls показывает также скрытые файлы, имена которых начинаются с точки?"),
    "uk": ("Типово ls не показує файли, назви яких починаються з крапки. Параметр -a виводить також ці приховані записи.",
           "Який параметр ls показує також приховані файли, назви яких починаються з крапки?"),
    "ja": ("ls は、デフォルトでは名前がドットで始まるファイルを表示しない。-a オプションを指定すると、これらの隠しファイルも表示される。",
           "ls で名前がドットで始まる隠しファイルも表示するにはどのオプションを使うか？"),
    "zh": ("默认情况下，ls 不会列出名称以点开头的文件。使用 -a 选项可以同时显示这些隐藏的条目。",
           "ls 的哪个选项可以同时列出名称以点开头的隐藏文件？"),
}  # fmt: skip

_FALLBACK = (
    "Document: {title}\nParagraph:\n{paragraph}\n\n"
    "Write one specific question in {language} that this paragraph answers. Write the question in "
    "{language}, not in English. The question must make sense on its own: name the program or topic "
    "instead of using words like 'it' or 'this'. "
    'Reply as JSON: {{"question": "..."}}'
)


def base_lang(code: str) -> str:
    """'pt_BR' / 'zh-TW' / 'DE' -> 'pt' / 'zh' / 'de': the code templates and language ID compare on."""
    return code.replace("-", "_").split("_")[0].lower()


def build_messages(lang: str, title: str, paragraph: str, example: bool = True) -> list[dict[str, str]]:
    """Chat messages asking for one question about `paragraph` in language `lang`.

    >>> build_messages("de", "tar(1)", "tar packt Dateien.")[-1]["content"].splitlines()[0]
    'Dokument: tar(1)'
    >>> [m["role"] for m in build_messages("de", "tar(1)", "tar packt Dateien.")]
    ['system', 'user', 'assistant', 'user']
    >>> "in Swedish" in build_messages("sv", "ls", "ls listar filer.")[-1]["content"]
    True
    """
    code = base_lang(lang)
    template = TEMPLATES.get(code)
    messages = [{"role": "system", "content": SYSTEM}]
    if template is None or not example:
        if template is not None:
            messages.append({"role": "user", "content": template.format(title=title, paragraph=paragraph)})
            return messages
        language = LANGUAGE_NAMES.get(code, code)
        messages.append(
            {"role": "user", "content": _FALLBACK.format(title=title, paragraph=paragraph, language=language)}
        )
        return messages
    example_paragraph, example_question = EXAMPLES[code]
    messages += [
        {"role": "user", "content": template.format(title="ls(1)", paragraph=example_paragraph)},
        {"role": "assistant", "content": json.dumps({"question": example_question}, ensure_ascii=False)},
        {"role": "user", "content": template.format(title=title, paragraph=paragraph)},
    ]
    return messages
