"""Notebook -> Markdown, shared by the README generator and the docs builder.

nbconvert's MarkdownExporter does not understand nbdev/Quarto cell directives (`#| hide`, `#| echo: false`,
`#| output: asis`), and Quarto itself cannot be installed here, so this small converter applies exactly those
directives and leaves everything else to Markdown.
"""
import base64, re
from pathlib import Path

DIRECTIVE = re.compile(r'^\s*#\|\s*(.*)$')

def directives(src):
    "The `#| ...` lines of a cell as a dict, and the source without them."
    opts, body = {}, []
    for line in src.splitlines():
        m = DIRECTIVE.match(line)
        if m and not body:
            k, _, v = m.group(1).partition(':')
            opts[k.strip()] = v.strip() or True
        else: body.append(line)
    return opts, '\n'.join(body).strip('\n')

def _fence(text, lang=''):
    text = text.rstrip('\n')
    return f'```{lang}\n{text}\n```' if text.strip() else ''

def outputs_md(outputs, img_dir=None, img_prefix='', stem='img'):
    "Markdown for a code cell's outputs; images are written into `img_dir` (or inlined as data URIs)."
    parts = []
    for i, o in enumerate(outputs):
        if o.get('output_type') == 'stream':
            if o.get('name') == 'stderr': continue  # warnings and progress bars are noise on a docs page
            parts.append(_fence(''.join(o.get('text', ''))))
        elif o.get('output_type') in ('execute_result', 'display_data'):
            data = o.get('data', {})
            mime = next((m for m in ('image/png', 'image/jpeg') if m in data), None)
            if mime:
                ext, b64 = mime.split('/')[1], ''.join(data[mime]).strip()
                if img_dir is None: parts.append(f"![](data:{mime};base64,{b64})")
                else:
                    Path(img_dir).mkdir(parents=True, exist_ok=True)
                    name = f'{stem}_{len(list(Path(img_dir).glob(stem + "_*")))}.{ext}'
                    (Path(img_dir)/name).write_bytes(base64.b64decode(b64))
                    parts.append(f'![]({img_prefix}{name})')
            elif 'text/markdown' in data: parts.append(''.join(data['text/markdown']))
            elif 'text/plain' in data: parts.append(_fence(''.join(data['text/plain'])))
        elif o.get('output_type') == 'error':
            parts.append(_fence('\n'.join(o.get('traceback', []))))
    return '\n\n'.join(p for p in parts if p)

def notebook_md(nb, img_dir=None, img_prefix='', stem='img', skip_export=False):
    "Markdown for a whole notebook (`nbformat` node), honouring hide / echo / output directives."
    parts = []
    for cell in nb.cells:
        if cell.cell_type == 'raw': continue
        if cell.cell_type == 'markdown':
            parts.append(cell.source); continue
        opts, body = directives(cell.source)
        if 'hide' in opts or opts.get('include') == 'false': continue
        if skip_export and ('export' in opts or 'exports' in opts): continue
        if opts.get('echo') != 'false' and body: parts.append(_fence(body, 'python'))
        if opts.get('output') != 'false': parts.append(outputs_md(cell.get('outputs', []), img_dir, img_prefix, stem))
    return '\n\n'.join(p for p in parts if p and p.strip()) + '\n'
