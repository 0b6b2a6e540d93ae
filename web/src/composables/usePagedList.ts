import { reactive, ref, shallowRef } from 'vue'
import { errorMessage } from '@/api/errors'
import type { Page } from '@/api/types'

export interface ListQuery {
  page: number
  page_size: number
  q: string
  [extra: string]: string | number
}

/**
 * The state every list page has: query (search, page), items, total, loading and the last
 * error, with stale answers dropped when a newer request was made meanwhile.
 */
export function usePagedList<T>(fetchPage: (q: ListQuery) => Promise<Page<T>>, extra: Record<string, string | number> = {}) {
  const query = reactive<ListQuery>({ page: 1, page_size: 20, q: '', ...extra })
  const items = shallowRef<T[]>([])
  const total = ref(0)
  const loading = ref(false)
  const error = ref<string | null>(null)
  let seq = 0

  async function load(): Promise<void> {
    const mine = ++seq
    loading.value = true
    error.value = null
    try {
      const page = await fetchPage({ ...query })
      if (mine !== seq) return
      items.value = page.items
      total.value = page.total
    } catch (err) {
      if (mine !== seq) return
      error.value = errorMessage(err)
    } finally {
      if (mine === seq) loading.value = false
    }
  }

  /** New search terms start again from page 1. */
  function search(): Promise<void> {
    query.page = 1
    return load()
  }

  return { query, items, total, loading, error, load, search }
}
