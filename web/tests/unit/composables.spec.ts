import { describe, expect, it } from 'vitest'
import { ref } from 'vue'
import { useAutoScroll } from '@/composables/useAutoScroll'
import { usePagedList, type ListQuery } from '@/composables/usePagedList'
import { ApiError } from '@/api/errors'
import type { Page } from '@/api/types'

function fakeScroller(height: number, client: number) {
  const el = document.createElement('div')
  let top = 0
  Object.defineProperty(el, 'scrollHeight', { get: () => height, configurable: true })
  Object.defineProperty(el, 'clientHeight', { get: () => client })
  Object.defineProperty(el, 'scrollTop', { get: () => top, set: (v: number) => (top = Math.min(v, height - client)) })
  return { el, grow: (by: number) => (height += by) }
}

describe('auto-scroll', () => {
  it('follows new content while pinned and stops when the user scrolls up', async () => {
    const s = fakeScroller(1000, 400)
    const scroll = useAutoScroll(ref(s.el))
    await scroll.follow()
    expect(s.el.scrollTop).toBe(600)

    s.grow(200)
    await scroll.follow()
    expect(s.el.scrollTop).toBe(800)

    s.el.scrollTop = 300 // the user scrolls up to read
    scroll.onScroll()
    expect(scroll.pinned.value).toBe(false)
    s.grow(200)
    await scroll.follow()
    expect(s.el.scrollTop).toBe(300)

    s.el.scrollTop = 10_000 // back to the bottom re-engages it
    scroll.onScroll()
    expect(scroll.pinned.value).toBe(true)
    s.grow(100)
    await scroll.follow()
    expect(s.el.scrollTop).toBe(1100)
  })
})

describe('paged list', () => {
  it('shows the newest answer only and surfaces errors', async () => {
    const pending: Array<(p: Page<string>) => void> = []
    let failNext = false
    const list = usePagedList<string>(
      (q: ListQuery) =>
        new Promise((resolve, reject) => {
          if (failNext) return reject(new ApiError(500, 'internal', 'boom'))
          pending.push((p) => resolve({ ...p, page: q.page }))
        }),
    )
    const first = list.load()
    list.query.q = 'x'
    const second = list.search()
    expect(list.loading.value).toBe(true)
    pending[1]!({ items: ['new'], total: 1, page: 1, page_size: 20 })
    await second
    pending[0]!({ items: ['old'], total: 9, page: 1, page_size: 20 })
    await first
    expect(list.items.value).toEqual(['new'])
    expect(list.total.value).toBe(1)
    expect(list.loading.value).toBe(false)

    failNext = true
    await list.load()
    expect(list.error.value).toBe('boom')
    expect(list.loading.value).toBe(false)
  })

  it('search goes back to page 1', async () => {
    const seen: number[] = []
    const list = usePagedList<string>(async (q) => {
      seen.push(q.page)
      return { items: [], total: 0, page: q.page, page_size: q.page_size }
    })
    list.query.page = 3
    await list.load()
    await list.search()
    expect(seen).toEqual([3, 1])
  })
})
