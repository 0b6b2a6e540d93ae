import { describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import { nextTick } from 'vue'
import ElementPlus from 'element-plus'
import { i18n } from '@/locales'
import MarkdownView from '@/components/MarkdownView.vue'
import ThinkPanel from '@/components/ThinkPanel.vue'
import MetricBadge from '@/components/MetricBadge.vue'

const global = { plugins: [i18n, ElementPlus] }

describe('MarkdownView', () => {
  it('renders sanitised Markdown and copies a code block', async () => {
    const writeText = vi.fn().mockResolvedValue(undefined)
    Object.defineProperty(navigator, 'clipboard', { value: { writeText }, configurable: true })
    const w = mount(MarkdownView, { props: { source: '**hi** <script>x()</script>\n\n```js\nconst a = 1\n```' }, global })
    expect(w.find('strong').text()).toBe('hi')
    expect(w.find('script').exists()).toBe(false)
    await w.find('button[data-copy]').trigger('click')
    expect(writeText).toHaveBeenCalledWith('const a = 1\n')
  })

  it('re-renders as the source grows', async () => {
    const w = mount(MarkdownView, { props: { source: 'a' }, global })
    await w.setProps({ source: 'a **b**' })
    await nextTick()
    expect(w.find('strong').text()).toBe('b')
  })
})

describe('ThinkPanel', () => {
  it('is open while reasoning streams and can be collapsed', async () => {
    const w = mount(ThinkPanel, { props: { text: 'thinking…', streaming: true }, global })
    expect(w.find('[data-testid="reasoning-text"]').isVisible()).toBe(true)
    await w.find('button').trigger('click')
    expect(w.find('[data-testid="reasoning-text"]').attributes('style')).toContain('display: none')
  })

  it('renders nothing without reasoning', () => {
    const w = mount(ThinkPanel, { props: { text: '' }, global })
    expect(w.find('[data-testid="reasoning-panel"]').exists()).toBe(false)
  })
})

describe('MetricBadge', () => {
  it('shows TTFT, tokens/s, tokens and a stopped answer', () => {
    i18n.global.locale.value = 'en'
    const w = mount(MetricBadge, {
      props: {
        metrics: {
          ttft_ms: 1500,
          ttfa_ms: 2000,
          reasoning_tokens: 7,
          answer_tokens: 42,
          answer_tokens_per_s: 21.04,
          total_ms: 4000,
        },
        finishReason: 'stopped',
      },
      global,
    })
    const text = w.text()
    expect(text).toContain('TTFT 1.50 s')
    expect(text).toContain('21.0 tok/s')
    expect(text).toContain('42')
    expect(text).toContain('Stopped')
    i18n.global.locale.value = 'zh-CN'
  })
})
