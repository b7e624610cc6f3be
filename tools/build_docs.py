"""Build the documentation site offline into `_docs/`: one page per notebook, with prose, examples, outputs
and the API reference that `show_doc` renders.

    python tools/build_docs.py           # build _docs/ (runs nbdev_proc_nbs first)
    python tools/build_docs.py --check   # also verify every notebook has a page and every exported name is shown
    python tools/check_site.py _docs     # then open every page in headless Chromium (console, images, links)

Why this and not Quarto: `nbdev_docs` needs Quarto, which cannot be installed here (no wheel; its installer
downloads a binary). `nbdev_proc_nbs` still works offline: it runs nbdev's processors (show_doc rendering,
doc links, hidden cells) and writes `_proc/`. We turn those notebooks into Markdown (tools/nbmd.py) and let
MkDocs with the Material theme build the site: both are pure-Python packages on PyPI, build in seconds, and give
navigation, page tables of contents and full-text search that works from `file://` (the `offline` plugin)
with no fonts or scripts fetched from the internet (the offline plugin's iframe-worker shim, which it would load
from unpkg.com, is replaced by a small local one: SHIM_JS). Links to notebooks (`02_cub.ipynb`) become links to
their pages, as Quarto does.
"""
import configparser, posixpath, re, shutil, subprocess, sys
from pathlib import Path
import nbformat
sys.path.insert(0, str(Path(__file__).parent))
from nbmd import notebook_md

root = Path(__file__).resolve().parent.parent
cfg = configparser.ConfigParser(); cfg.read(root/'settings.ini'); cfg = cfg['DEFAULT']
doc_url = cfg['doc_host'].rstrip('/') + '/' + cfg['doc_baseurl'].strip('/') + '/'
proc, src, site = root/'_proc', root/'_proc_md', root/cfg.get('doc_path', '_docs')

def frontmatter(nb):
    "title / description / output-file from the raw YAML cell nbdev_proc_nbs puts first."
    meta = {}
    for cell in nb.cells:
        if cell.cell_type == 'raw' and cell.source.startswith('---'):
            for m in re.finditer(r"^([\w-]+):\s*(.*(?:\n  .*)*)", cell.source, re.M):
                meta[m.group(1)] = ' '.join(m.group(2).split()).strip("'\"")
            break
    return meta

def page_md(nb, stem, rel, pages):
    up = '../' * stem.count('/')  # from this page's folder back to the site root
    md = notebook_md(nb, img_dir=src/'images', img_prefix=up + 'images/', stem=stem.replace('/', '_'))
    md = md.replace(doc_url, up)  # nbdev's doc links point at the hosted site; make them relative to this page
    # links to notebooks go to their pages, as Quarto does: `[CUB](02_cub.ipynb#x)` -> `cub.md#x` (MkDocs -> cub.html)
    def nb_link(m):
        target = m.group(1)
        if '://' in target or target.startswith('/'): return m.group(0)
        t = posixpath.normpath(posixpath.join(posixpath.dirname(str(rel)), target))
        if t not in pages: return m.group(0)  # no such notebook: left as written, so the site check reports it
        return '](' + posixpath.relpath(pages[t], posixpath.dirname(stem) or '.') + (m.group(2) or '') + ')'
    md = re.sub(r'\]\(([^)\s]+?\.ipynb)(#[^)\s]*)?\)', nb_link, md)
    # give every show_doc heading the id nbdev's links use (lower-cased name, dots kept)
    md = re.sub(r'^(#{2,4}) ([\w.]+)\s*$', lambda m: f'{m.group(1)} {m.group(2)} {{#{m.group(2).lower()}}}', md, flags=re.M)
    return md

def build():
    # nbdev_proc_nbs first calls _ensure_quarto, which would curl Quarto's installer and `pip install -e .`:
    # nothing may be downloaded here, and Quarto is not needed for processing, so that one step is skipped.
    import nbdev.quarto, os
    os.chdir(root)
    nbdev.quarto._ensure_quarto = lambda: None
    nbdev.quarto.nbdev_proc_nbs.__wrapped__()
    shutil.rmtree(src, ignore_errors=True); src.mkdir()
    nav, pages, todo = [], {}, []
    for nbp in sorted(proc.rglob('*.ipynb')):  # all pages first, so that links between notebooks can be resolved
        rel = nbp.relative_to(proc)
        if any(p.startswith(('_', '.')) for p in rel.parts): continue
        nb = nbformat.read(nbp, as_version=4)
        meta = frontmatter(nb)
        out = meta.get('output-file', rel.stem + '.html').rsplit('.', 1)[0]
        stem = str(rel.parent/out) if rel.parent != Path('.') else out
        pages[str(rel)] = f'{stem}.md'
        todo.append((rel, nb, meta, stem))
    for rel, nb, meta, stem in todo:
        title = meta.get('title', rel.stem)
        head = '' if stem == 'index' else f"# {title}\n\n" + (f"> {meta['description']}\n\n" if meta.get('description') else '')
        (src/f'{stem}.md').parent.mkdir(parents=True, exist_ok=True)
        (src/f'{stem}.md').write_text(head + page_md(nb, stem, rel, pages))
        nav.append((rel, title, f'{stem}.md'))
    # Material's offline plugin would add a <script> from unpkg.com (iframe-worker, so that search runs from
    # file://); nothing may be fetched from the internet, so the site carries its own small shim instead.
    (src/SHIM).parent.mkdir(parents=True, exist_ok=True); (src/SHIM).write_text(SHIM_JS)
    nav_yaml = ['  - Home: index.md']
    sections = {}
    for rel, title, page in nav:
        if page == 'index.md': continue
        sections.setdefault(rel.parent.name or '', []).append(f'{title}: {page}')
    for sec, items in sections.items():
        if not sec: nav_yaml += [f'  - "{i.split(": ")[0]}": {i.split(": ")[1]}' for i in items]
        else: nav_yaml += [f'  - {sec.title()}:'] + [f'    - "{i.split(": ")[0]}": {i.split(": ")[1]}' for i in items]
    (root/'_proc_md.yml').write_text(MKDOCS.format(title=cfg['title'], desc=cfg['description'], src=src.name,
                                                   site=site.name, nav='\n'.join(nav_yaml), shim=SHIM))
    subprocess.run(['mkdocs', 'build', '-q', '-f', str(root/'_proc_md.yml')], check=True, cwd=root)
    return pages

SHIM = 'assets/javascripts/iframe-worker-shim.js'  # the name must contain "iframe-worker": the plugin then adds none
SHIM_JS = """// Worker for pages opened from file://: Chromium refuses to start a Worker from a file: URL, so a worker script
// runs in a hidden iframe of the page instead (same origin as the page). Written for this site's search worker
// (Material for MkDocs): message events both ways, importScripts returning a promise, onerror, terminate.
(function () {
  if (location.protocol !== "file:" || typeof window === "undefined") return;
  function FrameWorker(url) {
    var self = this, events = new EventTarget(), queue = [], ready = false;
    this.onmessage = null; this.onerror = null;
    var frame = document.createElement("iframe");
    frame.style.display = "none"; frame.setAttribute("aria-hidden", "true"); frame.tabIndex = -1;
    (document.body || document.documentElement).appendChild(frame);
    var w = frame.contentWindow, d = w.document;
    function emit(type, init) {
      var e = type === "message" ? new MessageEvent(type, init) : new ErrorEvent(type, init);
      var h = type === "message" ? self.onmessage : self.onerror;
      if (h) h.call(self, e);
      events.dispatchEvent(e);
    }
    function load(src) {
      return new Promise(function (resolve, reject) {
        var s = d.createElement("script");
        s.src = new URL(src, url).href; s.onload = resolve;
        s.onerror = function () { reject(new Error("cannot load " + s.src)); };
        d.head.appendChild(s);
      });
    }
    w.postMessage = function (data) { setTimeout(function () { emit("message", {data: data}); }, 0); };
    w.importScripts = function () {
      var srcs = Array.prototype.slice.call(arguments);
      return srcs.reduce(function (p, src) { return p.then(function () { return load(src); }); }, Promise.resolve());
    };
    w.addEventListener("error", function (e) { emit("error", {message: e.message, filename: e.filename, lineno: e.lineno, error: e.error}); });
    url = new URL(url, location.href).href;
    load(url).then(function () { ready = true; queue.splice(0).forEach(function (m) { self.postMessage(m); }); },
                   function (err) { emit("error", {message: err.message, error: err}); });
    this.postMessage = function (data) {
      if (!ready) { queue.push(data); return; }
      var copy = typeof structuredClone === "function" ? structuredClone(data) : JSON.parse(JSON.stringify(data));
      setTimeout(function () { w.dispatchEvent(new w.MessageEvent("message", {data: copy})); }, 0);
    };
    this.addEventListener = events.addEventListener.bind(events);
    this.removeEventListener = events.removeEventListener.bind(events);
    this.dispatchEvent = events.dispatchEvent.bind(events);
    this.terminate = function () { frame.remove(); };
  }
  window.Worker = FrameWorker;
})();
"""

MKDOCS = """site_name: {title}
site_description: "{desc}"
docs_dir: {src}
site_dir: {site}
use_directory_urls: false
theme:
  name: material
  font: false
  features: [navigation.sections, content.code.copy, toc.follow]
plugins: [search, offline]
markdown_extensions:
  - attr_list
  - md_in_html
  - tables
  - admonition
  - toc:
      permalink: true
  - pymdownx.highlight
  - pymdownx.superfences
  - pymdownx.arithmatex:
      generic: true
extra_javascript: []
extra:
  polyfills: [{shim}]
nav:
{nav}
"""

def check(pages):
    "Every notebook has a page; every exported (module-level, public) name appears on a page."
    problems = []
    for nbp in sorted((root/'nbs').rglob('*.ipynb')):
        rel = nbp.relative_to(root/'nbs')
        if any(p.startswith(('_', '.')) for p in rel.parts) or '.ipynb_checkpoints' in rel.parts: continue
        if str(rel) not in pages or not (site/pages[str(rel)].replace('.md', '.html')).exists():
            problems.append(f'no page for notebook {rel}')
    ns = {}  # read this checkout's index, not whatever copy of the package is installed
    exec((root/cfg['lib_path']/'_modidx.py').read_text(), ns)
    modidx = ns['d']
    html = {p: (site/p.replace('.md', '.html')).read_text() for p in pages.values() if (site/p.replace('.md', '.html')).exists()}
    alltext = '\n'.join(html.values())
    n = 0
    for mod, syms in modidx['syms'].items():
        for full in syms:
            name = full[len(mod) + 1:]
            if '.' in name or name.startswith('_'): continue  # exported = module-level public names (methods show under their class)
            n += 1
            if name not in alltext: problems.append(f'exported name {full} appears on no page')
    for p in problems: print('docs check:', p)
    print(f'docs: {len(pages)} pages, {n} exported names checked, {len(problems)} problems')
    return not problems

if __name__ == '__main__':
    pages = build()
    print(f'built {site}/index.html')
    if '--check' in sys.argv and not check(pages): sys.exit(1)
