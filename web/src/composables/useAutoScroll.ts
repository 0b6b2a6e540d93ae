import { nextTick, ref, type Ref } from 'vue'

/**
 * Keeps a scroll container pinned to the bottom while content grows, and lets go as soon as
 * the user scrolls up; scrolling back to the bottom re-engages it.
 */
export function useAutoScroll(container: Ref<HTMLElement | null | undefined>, threshold = 48) {
  const pinned = ref(true)

  function onScroll(): void {
    const el = container.value
    if (!el) return
    pinned.value = el.scrollHeight - el.scrollTop - el.clientHeight <= threshold
  }

  async function follow(): Promise<void> {
    if (!pinned.value) return
    await nextTick()
    const el = container.value
    if (el) el.scrollTop = el.scrollHeight
  }

  async function toBottom(): Promise<void> {
    pinned.value = true
    await follow()
  }

  return { pinned, onScroll, follow, toBottom }
}
