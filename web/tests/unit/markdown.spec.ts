import { describe, expect, it } from 'vitest'
import { renderMarkdown, sanitizeHtml } from '@/utils/markdown'

function dom(html: string): HTMLElement {
  const div = document.createElement('div')
  div.innerHTML = html
  return div
}

function hasHandlers(root: HTMLElement): boolean {
  return [...root.querySelectorAll('*')].some((el) => [...el.attributes].some((a) => a.name.startsWith('on')))
}

describe('Markdown rendering of untrusted model output', () => {
  it('never produces a script element', () => {
    const out = dom(renderMarkdown('Hi <script>alert(1)</script> **bold**'))
    expect(out.querySelector('script')).toBeNull()
    expect(out.querySelector('strong')?.textContent).toBe('bold')
    // Raw HTML is shown as text, not executed.
    expect(out.textContent).toContain('<script>alert(1)</script>')
  })

  it('never produces event handler attributes', () => {
    const out = dom(renderMarkdown('<img src=x onerror="alert(1)"> and <a href="#" onclick="x()">a</a>'))
    expect(out.querySelector('img')).toBeNull()
    expect(hasHandlers(out)).toBe(false)
  })

  it('drops javascript: links', () => {
    const out = dom(renderMarkdown('[click](javascript:alert(1)) <javascript:alert(1)>'))
    for (const a of out.querySelectorAll('a')) expect(a.getAttribute('href') ?? '').not.toMatch(/^javascript:/i)
  })

  it('sanitiser strips script and onerror from raw HTML', () => {
    const out = dom(sanitizeHtml('<p>ok</p><script>alert(1)</script><img src="x" onerror="alert(1)"><svg onload="x()"></svg>'))
    expect(out.querySelector('script')).toBeNull()
    expect(hasHandlers(out)).toBe(false)
    expect(out.querySelector('p')?.textContent).toBe('ok')
  })

  it('highlights fenced code and adds a copy button', () => {
    const out = dom(renderMarkdown('```python\ndef f():\n    return 1\n```', { copyLabel: '复制' }))
    const code = out.querySelector('pre code.hljs')
    expect(code).not.toBeNull()
    expect(code?.querySelector('span.hljs-keyword')?.textContent).toBe('def')
    expect(code?.textContent).toBe('def f():\n    return 1\n')
    expect(out.querySelector('button[data-copy]')?.textContent).toBe('复制')
  })

  it('escapes code in an unknown language', () => {
    const out = dom(renderMarkdown('```nosuchlang\n<b>x</b>\n```'))
    expect(out.querySelector('pre code b')).toBeNull()
    expect(out.querySelector('pre code')?.textContent).toBe('<b>x</b>\n')
  })

  it('renders links opening in a new tab without opener', () => {
    const a = dom(renderMarkdown('[x](https://example.com)')).querySelector('a')
    expect(a?.getAttribute('target')).toBe('_blank')
    expect(a?.getAttribute('rel')).toContain('noopener')
  })
})
