import { computed, reactive, ref } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { createSystemPrompt, deleteSystemPrompt, listSystemPrompts, updateSystemPrompt } from '@/api/prompts'
import type { PromptFormat, SystemPrompt, SystemPromptInput } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { useAuthStore } from '@/stores/auth'
import { t } from '@/locales'

export const PROMPT_CATEGORIES = ['general', 'coding', 'translation', 'writing', 'analysis']
export const PROMPT_FORMATS: PromptFormat[] = ['openai', 'ollama', 'custom']

export function useSystemPrompts() {
  const auth = useAuthStore()
  const list = usePagedList((q) => listSystemPrompts(q), { category: '' })

  /** The server filters by `category`; filtering again here keeps the view right if it does not. */
  const visible = computed(() =>
    list.query.category ? list.items.value.filter((p) => p.category === list.query.category) : list.items.value,
  )
  const categories = computed(() =>
    [...new Set([...PROMPT_CATEGORIES, ...list.items.value.map((p) => p.category)])].filter(Boolean),
  )

  const canEdit = (p: SystemPrompt) => !p.is_system || auth.isAdmin

  const dialogOpen = ref(false)
  const editing = ref<SystemPrompt | null>(null)
  const saving = ref(false)
  const errors = useFieldErrors()
  const form = reactive<Required<SystemPromptInput>>(emptyForm())

  function emptyForm(): Required<SystemPromptInput> {
    return {
      name: '',
      content: '',
      description: '',
      format_type: 'openai',
      category: 'general',
      is_default: false,
      is_system: false,
    }
  }

  function openCreate(): void {
    editing.value = null
    Object.assign(form, emptyForm())
    errors.clear()
    dialogOpen.value = true
  }

  function openEdit(p: SystemPrompt): void {
    editing.value = p
    Object.assign(form, {
      name: p.name,
      content: p.content,
      description: p.description ?? '',
      format_type: p.format_type,
      category: p.category,
      is_default: p.is_default,
      is_system: p.is_system,
    })
    errors.clear()
    dialogOpen.value = true
  }

  async function save(): Promise<void> {
    errors.clear()
    saving.value = true
    const body: SystemPromptInput = {
      name: form.name.trim(),
      content: form.content,
      description: form.description.trim() || undefined,
      format_type: form.format_type,
      category: form.category.trim() || 'general',
      is_default: form.is_default,
    }
    if (auth.isAdmin) body.is_system = form.is_system
    try {
      if (editing.value) await updateSystemPrompt(editing.value.id, body)
      else await createSystemPrompt(body)
      ElMessage.success(t('common.saved'))
      dialogOpen.value = false
      await list.load()
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  async function remove(p: SystemPrompt): Promise<void> {
    const ok = await ElMessageBox.confirm(t('prompts.confirmDelete', { name: p.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteSystemPrompt(p.id)
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
    formats: PROMPT_FORMATS,
    isAdmin: computed(() => auth.isAdmin),
    canEdit,
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
