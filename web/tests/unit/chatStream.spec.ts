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
      data: { finish_reason: 'stop', metrics: { ttft_ms: 5, ttfa_ms: 9, reasoning_tokens: 2, answer_tokens: 3, answer_tokens_per_s: 30, total_ms: 100 } },
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
    expect(normalizeResults({ ...base, results: [{ model_config_id: 'a', content: 'x' }] })).toEqual([{ model_config_id: 'a', content: 'x' }])
    expect(normalizeResults({ ...base, results: { b: { model_config_id: '', content: 'y' } } })[0]?.content).toBe('y')
    expect(normalizeResults({ ...base, results: { c: { content: 'z' } as never } })[0]?.model_config_id).toBe('c')
    expect(normalizeResults({ ...base, results: null })).toEqual([])
  })
})
