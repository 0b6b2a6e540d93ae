import { computed, reactive, ref } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { createTestPrompt, deleteTestPrompt, listTestPrompts, updateTestPrompt } from '@/api/prompts'
import type { TestPrompt, TestPromptInput } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { t } from '@/locales'

export function useTestPrompts() {
  const list = usePagedList((q) => listTestPrompts(q), { category: '' })

  const visible = computed(() =>
    list.query.category ? list.items.value.filter((p) => (p.category ?? '') === list.query.category) : list.items.value,
  )
  const categories = computed(() => [...new Set(list.items.value.map((p) => p.category ?? '').filter(Boolean))])

  const dialogOpen = ref(false)
  const editing = ref<TestPrompt | null>(null)
  const saving = ref(false)
  const errors = useFieldErrors()
  const form = reactive({ title: '', content: '', category: '' })

  function openCreate(): void {
    editing.value = null
    Object.assign(form, { title: '', content: '', category: '' })
    errors.clear()
    dialogOpen.value = true
  }

  function openEdit(p: TestPrompt): void {
    editing.value = p
    Object.assign(form, { title: p.title, content: p.content, category: p.category ?? '' })
    errors.clear()
    dialogOpen.value = true
  }

  async function save(): Promise<void> {
    errors.clear()
    saving.value = true
    const body: TestPromptInput = { title: form.title.trim(), content: form.content }
    if (form.category.trim()) body.category = form.category.trim()
    try {
      if (editing.value) await updateTestPrompt(editing.value.id, body)
      else await createTestPrompt(body)
      ElMessage.success(t('common.saved'))
      dialogOpen.value = false
      await list.load()
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  async function remove(p: TestPrompt): Promise<void> {
    const ok = await ElMessageBox.confirm(t('prompts.confirmDelete', { name: p.title }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteTestPrompt(p.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  return {
    ...list,
    visible,
    categories,
    dialogOpen,
    editing,
    saving,
    form,
    fieldErrors: errors.fieldErrors,
    openCreate,
    openEdit,
    save,
    remove,
  }
}
