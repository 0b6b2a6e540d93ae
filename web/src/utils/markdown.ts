import MarkdownIt from 'markdown-it'
import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import javascript from 'highlight.js/lib/languages/javascript'
import typescript from 'highlight.js/lib/languages/typescript'
import python from 'highlight.js/lib/languages/python'
import rust from 'highlight.js/lib/languages/rust'
import json from 'highlight.js/lib/languages/json'
import sql from 'highlight.js/lib/languages/sql'
import xml from 'highlight.js/lib/languages/xml'
import css from 'highlight.js/lib/languages/css'
import go from 'highlight.js/lib/languages/go'
import java from 'highlight.js/lib/languages/java'
import cpp from 'highlight.js/lib/languages/cpp'
import yaml from 'highlight.js/lib/languages/yaml'

hljs.registerLanguage('bash', bash)
hljs.registerLanguage('javascript', javascript)
hljs.registerLanguage('typescript', typescript)
hljs.registerLanguage('python', python)
hljs.registerLanguage('rust', rust)
hljs.registerLanguage('json', json)
hljs.registerLanguage('sql', sql)
hljs.registerLanguage('xml', xml)
hljs.registerLanguage('css', css)
hljs.registerLanguage('go', go)
hljs.registerLanguage('java', java)
hljs.registerLanguage('cpp', cpp)
hljs.registerLanguage('yaml', yaml)

const escapeHtml = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;')

function highlight(code: string, lang: string): string {
  const name = lang && hljs.getLanguage(lang) ? lang : ''
  try {
    return name ? hljs.highlight(code, { language: name, ignoreIllegals: true }).value : escapeHtml(code)
  } catch {
    return escapeHtml(code)
  }
}

/** Raw HTML in model output is shown as text (`html: false`); DOMPurify then cleans what markdown-it made. */
const md = new MarkdownIt({ html: false, linkify: true, breaks: true, typographer: false })

md.renderer.rules.fence = (tokens, idx, _options, env) => {
  const token = tokens[idx]
  const lang = (token.info || '').trim().split(/\s+/)[0] ?? ''
  const body = highlight(token.content, lang.toLowerCase())
  const copyLabel = (env as { copyLabel?: unknown } | undefined)?.copyLabel
  const label = escapeHtml(typeof copyLabel === 'string' ? copyLabel : 'Copy')
  return (
    `<div class="code-block"><div class="code-head"><span class="code-lang">${escapeHtml(lang || 'text')}</span>` +
    `<button type="button" class="code-copy" data-copy="1">${label}</button></div>` +
    `<pre><code class="hljs${lang ? ` language-${escapeHtml(lang)}` : ''}">${body}</code></pre></div>`
  )
}

let hooked = false
function ensureHooks(): void {
  if (hooked) return
  hooked = true
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      node.setAttribute('target', '_blank')
      node.setAttribute('rel', 'noopener noreferrer nofollow')
    }
  })
}

/** Sanitises arbitrary HTML with the app's policy (no scripts, handlers, forms, iframes, styles). */
export function sanitizeHtml(html: string): string {
  // Without a DOM DOMPurify returns its input untouched: show text rather than unsanitised HTML.
  if (!DOMPurify.isSupported) return escapeHtml(html)
  ensureHooks()
  return DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ['style', 'form', 'input', 'iframe', 'object', 'embed'],
    FORBID_ATTR: ['style'],
  })
}

/** Markdown (untrusted model output) → safe HTML with highlighted code blocks. */
export function renderMarkdown(source: string, opts: { copyLabel?: string } = {}): string {
  return sanitizeHtml(md.render(source ?? '', { copyLabel: opts.copyLabel }))
}
