import { describe, expect, it } from 'vitest'
import { applyAnswerEvent, emptyAnswer } from '@/composables/useChatStream'
import { normalizeResults } from '@/views/chat/useComparison'

describe('answer state from stream events', () => {
  it('accumulates reasoning and content, then metrics on done', () => {
    const a = emptyAnswer()
    applyAnswerEvent(a, { event: 'reasoning', data: { delta: 'think ' } })
    applyAnswerEvent(a, { event: 'reasoning', data: { delta: 'more' } })
    applyAnswerEvent(a, { event: 'content', data: { delta: '# Hi' } })
    applyAnswerEvent(a, { event: 'content', data: { delta: ' there' } })
    applyAnswerEvent(a, { event: 'usage', data: { prompt_tokens: 3, completion_tokens: 4 } })
    expect(a.streaming).toBe(true)
    applyAnswerEvent(a, {
      event: 'done',
      data: {
        finish_reason: 'stop',
        metrics: { ttft_ms: 5, ttfa_ms: 9, reasoning_tokens: 2, answer_tokens: 3, answer_tokens_per_s: 30, total_ms: 100 },
      },
    })
    expect(a).toMatchObject({ reasoning: 'think more', content: '# Hi there', finishReason: 'stop', streaming: false })
    expect(a.metrics?.answer_tokens_per_s).toBe(30)
    expect(a.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4 })
  })

  it('keeps the error message when an error precedes done', () => {
    const a = emptyAnswer()
    applyAnswerEvent(a, { event: 'content', data: { delta: 'partial' } })
    applyAnswerEvent(a, { event: 'error', data: { code: 'upstream', message: 'provider said 500' } })
    applyAnswerEvent(a, { event: 'done', data: { finish_reason: 'error', metrics: {} } })
    expect(a).toMatchObject({ content: 'partial', error: 'provider said 500', finishReason: 'error', streaming: false })
  })
})

describe('saved comparison results', () => {
  it('accepts a list or a map keyed by config id', () => {
    const base = { id: 1, test_name: 't', created_at: '' }
    expect(normalizeResults({ ...base, results: [{ model_config_id: 'a', content: 'x' }] })).toEqual([
      { model_config_id: 'a', content: 'x' },
    ])
    expect(normalizeResults({ ...base, results: { b: { model_config_id: '', content: 'y' } } })[0]?.content).toBe('y')
    expect(normalizeResults({ ...base, results: { c: { content: 'z' } as never } })[0]?.model_config_id).toBe('c')
    expect(normalizeResults({ ...base, results: null })).toEqual([])
  })
})

describe('comparison stream routing', () => {
  it('routes events to columns by model_config_id; one failing column leaves the other streaming', async () => {
    const { createPinia, setActivePinia } = await import('pinia')
    setActivePinia(createPinia())
    const { useComparison } = await import('@/views/chat/useComparison')
    const sse = await import('@/api/sse')
    const { vi } = await import('vitest')
    const events: Array<[string, Record<string, unknown>]> = [
      ['meta', { test_id: 7, model_config_ids: ['a', 'b'] }],
      ['content', { delta: 'A1', model_config_id: 'a' }],
      ['error', { code: 'upstream', message: 'b broke', model_config_id: 'b' }],
      ['done', { finish_reason: 'error', metrics: {}, model_config_id: 'b' }],
      ['content', { delta: 'A2', model_config_id: 'a' }],
      ['done', { finish_reason: 'stop', metrics: { answer_tokens: 2 }, model_config_id: 'a' }],
    ]
    const spy = vi.spyOn(sse, 'streamRequest').mockImplementation(async (_url, opts) => {
      for (const [event, data] of events) opts.onEvent({ event, data })
      return { aborted: false }
    })
    const cmpApi = await import('@/api/comparisons')
    vi.spyOn(cmpApi, 'listComparisons').mockResolvedValue({ items: [], total: 0, page: 1, page_size: 20 })
    const cmp = useComparison()
    cmp.selected = ['a', 'b']
    cmp.input = 'hello'
    await cmp.run()
    expect(spy).toHaveBeenCalledOnce()
    expect(cmp.currentTestId).toBe(7)
    const [a, b] = cmp.columns
    expect(a).toMatchObject({ configId: 'a', content: 'A1A2', finishReason: 'stop', error: null, streaming: false })
    expect(b).toMatchObject({ configId: 'b', content: '', finishReason: 'error', error: 'b broke', streaming: false })
  })
})
